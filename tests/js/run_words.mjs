// Runs js/ntp_words.js under node for tests/test_js_extension.py: reads {calls: [[fn, ...args]]} as JSON on stdin,
// prints the results as one JSON array.
import * as words from "../../js/ntp_words.js";

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { calls } = JSON.parse(input);
  const out = calls.map(([fn, ...args]) => {
    if (typeof words[fn] !== "function") throw new Error(`ntp_words.js has no function ${fn}`);
    return words[fn](...args);
  });
  process.stdout.write(JSON.stringify(out));
});
