// Runs js/ntp_words.js under node for the tests (tests/helpers.py run_words): reads {calls: [[name, ...args]]} as JSON
// on stdin, prints the results as one JSON array: a function's return value, or the value of an exported constant.
import * as words from "../../js/ntp_words.js";

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { calls } = JSON.parse(input);
  const out = calls.map(([name, ...args]) => {
    if (!(name in words)) throw new Error(`ntp_words.js exports no ${name}`);
    return typeof words[name] === "function" ? words[name](...args) : words[name];
  });
  process.stdout.write(JSON.stringify(out));
});
