"""The pictures shipped in example_workflows/, drawn here with Pillow (no photographs from elsewhere).

- ``nulltext_p2p_example.png``: the example photo the workflows load (512x512, a cartoon cat sitting on a table;
  the pack copies it into ComfyUI's input folder at start-up when it is not there).
- ``<workflow>.jpg``: the template browser's thumbnail of each example workflow (320x320: its title and what the
  edit does, drawn as source -> result).

Regenerate with ``python tests/example_images.py`` (any Python with Pillow and numpy); the test in
tests/test_js_extension.py checks that every example has its thumbnail and that the files stay small.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "example_workflows"
EXAMPLE_IMAGE = "nulltext_p2p_example.png"
SS = 2  # supersampling factor (drawn at 2x, reduced with a good filter: smooth edges)

THUMBNAILS = {
    # name: (title, subtitle, source scene, result scenes)
    "invert_and_reconstruct": ("1  Invert & reconstruct", "check the inversion first", "cat", ["cat"]),
    "word_swap": ("2  Word swap", "cat -> tiger, local blend", "cat", ["tiger"]),
    "refine": ("3  Refine: add a word", "... on a wooden table", "cat", ["wooden"]),
    "reweight": ("4  Reweight a word", "a fluffy cat, fluffy=2", "cat", ["fluffy"]),
    "invert_once_edit_many": ("5  One inversion, many edits", "tiger, dog, wooden table", "cat", ["tiger", "dog", "wooden"]),
    "sdxl_word_swap": ("6  SDXL word swap", "cat -> tiger at 1024x1024", "cat", ["tiger"]),
    "masked_edit": ("7  Masked edit", "cat -> tiger inside a mask", "cat", ["tiger"]),
    "sd35_word_swap": ("8  SD3.5 word swap", "cat -> tiger, flow matching", "cat", ["tiger"]),
    "qwen_image_word_swap": ("9  Qwen-Image word swap", "cat -> tiger, joint attention", "cat", ["tiger"]),
    "flux_word_swap": ("10  Flux-dev word swap", "cat -> tiger, Direct Inversion", "cat", ["tiger"]),
    "chroma_word_swap": ("11  Chroma word swap", "cat -> tiger, null-text", "cat", ["tiger"]),
}


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _cat(d: ImageDraw.ImageDraw, s: float, ox: float, oy: float, kind: str) -> None:
    """A sitting cat (or a tiger, a fluffy cat, a dog) on the table top at (ox, oy), scale s (512 px canvas = 1)."""
    def P(x, y):
        return (ox + x * s, oy + y * s)

    def box(x0, y0, x1, y1):
        return [P(x0, y0), P(x1, y1)]

    fur = {"cat": (128, 128, 136), "tiger": (226, 132, 38), "fluffy": (150, 150, 160), "dog": (150, 104, 62)}[kind]
    dark = {"cat": (70, 70, 78), "tiger": (30, 24, 20), "fluffy": (90, 90, 100), "dog": (96, 62, 34)}[kind]
    light = {"cat": (200, 200, 206), "tiger": (250, 236, 210), "fluffy": (224, 224, 232), "dog": (222, 196, 160)}[kind]
    if kind == "fluffy":  # a soft halo of fur behind the outline
        for r in range(14, 0, -3):
            shade = tuple(min(255, c + 10 + 3 * r) for c in fur)
            d.ellipse(box(-95 - r, -190 - r, 95 + r, 10 + r), fill=shade)
            d.ellipse(box(-70 - r, -300 - r, 70 + r, -170 + r), fill=shade)
    # tail
    ctrl = [(80, -20), (185, -30), (175, -120), (140, -175)]  # a cubic Bezier, sampled
    tail = []
    for i in range(25):
        t = i / 24
        x = sum(c[0] * w for c, w in zip(ctrl, ((1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3)))
        y = sum(c[1] * w for c, w in zip(ctrl, ((1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t * t * (1 - t), t ** 3)))
        tail.append(P(x, y))
    d.line(tail, fill=fur if kind != "tiger" else (210, 120, 30), width=int(22 * s), joint="curve")
    d.ellipse(box(129, -186, 151, -164), fill=fur if kind != "tiger" else (210, 120, 30))
    # body and chest
    d.ellipse(box(-95, -190, 95, 10), fill=fur)
    d.ellipse(box(-45, -170, 45, -20), fill=light)
    # head
    d.ellipse(box(-70, -300, 70, -170), fill=fur)
    if kind == "dog":  # floppy ears and a snout
        d.ellipse(box(-88, -292, -48, -200), fill=dark)
        d.ellipse(box(48, -292, 88, -200), fill=dark)
        d.ellipse(box(-38, -232, 38, -178), fill=light)
        d.ellipse(box(-12, -228, 12, -210), fill=(30, 24, 20))
    else:  # pointed ears
        d.polygon([P(-66, -255), P(-52, -335), P(-18, -292)], fill=fur)
        d.polygon([P(66, -255), P(52, -335), P(18, -292)], fill=fur)
        d.polygon([P(-56, -268), P(-50, -318), P(-28, -290)], fill=(222, 160, 170))
        d.polygon([P(56, -268), P(50, -318), P(28, -290)], fill=(222, 160, 170))
        d.ellipse(box(-26, -216, 26, -186), fill=light)
        d.polygon([P(-8, -214), P(8, -214), P(0, -204)], fill=(200, 110, 120))
    # eyes
    for ex in (-30, 30):
        d.ellipse(box(ex - 12, -262, ex + 12, -236), fill=(236, 220, 90) if kind != "dog" else (60, 40, 24))
        d.ellipse(box(ex - 4, -258, ex + 4, -240), fill=(20, 20, 20))
    # stripes
    if kind in ("tiger", "cat"):
        stripe = dark
        w = int((9 if kind == "tiger" else 6) * s)
        for y in (-150, -115, -80, -45):
            d.line([P(-92, y), P(-55, y + 12)], fill=stripe, width=w)
            d.line([P(92, y), P(55, y + 12)], fill=stripe, width=w)
        for x in (-22, 0, 22):
            d.line([P(x, -298), P(x * 0.7, -272)], fill=stripe, width=w)
        d.line([P(-70, -228), P(-44, -224)], fill=stripe, width=w)
        d.line([P(70, -228), P(44, -224)], fill=stripe, width=w)
    # front paws
    d.ellipse(box(-55, -12, -15, 12), fill=light)
    d.ellipse(box(15, -12, 55, 12), fill=light)


def scene(kind: str = "cat", size: int = 512) -> Image.Image:
    """The example photo (``kind`` "cat") or an edit of it: "tiger", "dog", "fluffy" (the animal), "wooden" (the
    table). Square, ``size`` px."""
    n = size * SS
    img = Image.new("RGB", (n, n))
    d = ImageDraw.Draw(img)
    s = n / 512
    # wall with a soft vertical gradient, a window, the floor
    for y in range(int(330 * s)):
        t = y / (330 * s)
        d.line([(0, y), (n, y)], fill=(int(176 - 30 * t), int(196 - 28 * t), int(214 - 22 * t)))
    d.rectangle([(330 * s, 40 * s), (470 * s, 200 * s)], fill=(226, 238, 246), outline=(120, 130, 140), width=int(8 * s))
    d.line([(400 * s, 40 * s), (400 * s, 200 * s)], fill=(120, 130, 140), width=int(6 * s))
    d.line([(330 * s, 120 * s), (470 * s, 120 * s)], fill=(120, 130, 140), width=int(6 * s))
    d.rectangle([(0, 330 * s), (n, n)], fill=(122, 108, 96))
    # the table: top (a trapezoid), front edge, legs
    wooden = kind == "wooden"
    top = (176, 120, 66) if wooden else (226, 226, 220)
    edge = (130, 82, 40) if wooden else (186, 186, 180)
    d.polygon([(70 * s, 330 * s), (442 * s, 330 * s), (490 * s, 390 * s), (22 * s, 390 * s)], fill=top)
    d.rectangle([(22 * s, 390 * s), (490 * s, 412 * s)], fill=edge)
    for x in (46, 446):
        d.rectangle([(x * s, 412 * s), ((x + 22) * s, 505 * s)], fill=edge)
    if wooden:  # grain
        for i, y in enumerate((342, 356, 371, 384)):
            d.line([(60 * s - i * 10 * s, y * s), (455 * s + i * 10 * s, y * s)], fill=(150, 98, 52), width=int(3 * s))
        for x in (120, 250, 380):
            d.arc([(x * s, 394 * s), ((x + 60) * s, 410 * s)], 0, 180, fill=(104, 64, 30), width=int(2 * s))
    # shadow under the animal, then the animal
    d.ellipse([(150 * s, 352 * s), (362 * s, 378 * s)], fill=tuple(int(c * 0.8) for c in top))
    _cat(d, s, 256 * s, 362 * s, kind if kind in ("tiger", "dog", "fluffy") else "cat")
    img = img.filter(ImageFilter.GaussianBlur(0.6 * SS))
    return img.resize((size, size), Image.LANCZOS)


def thumbnail(title: str, subtitle: str, source: str, results: list[str], size: int = 320) -> Image.Image:
    """A template card: source -> result(s), then the title and a subtitle at the bottom (frontend 1.49 lays a
    "Node graph" badge over the top left corner of the card)."""
    img = Image.new("RGB", (size, size), (28, 30, 36))
    d = ImageDraw.Draw(img)
    text_top, pad = size - 66, 10
    if len(results) == 1:
        tile = (size - 3 * pad - 22) // 2
        y = pad + (text_top - pad - tile) // 2
        img.paste(scene(source, tile), (pad, y))
        img.paste(scene(results[0], tile), (size - pad - tile, y))
        ax = pad + tile + 3
        d.polygon([(ax, y + tile // 2 - 9), (ax + 16, y + tile // 2), (ax, y + tile // 2 + 9)], fill=(240, 190, 80))
    else:
        tile = min((size - 3 * pad) // 2, (text_top - 2 * pad - 4) // 2)
        left = (size - 2 * tile - pad) // 2
        for i, kind in enumerate([source, *results][:4]):
            img.paste(scene(kind, tile), (left + (i % 2) * (tile + pad), pad + (i // 2) * (tile + 4)))
    d.text((14, text_top + 4), title, fill=(240, 240, 240), font=font(24))
    d.text((14, text_top + 36), subtitle, fill=(170, 200, 235), font=font(17))
    return img


def write_all(out_dir: Path = OUT_DIR) -> list[Path]:
    written = []
    path = out_dir / EXAMPLE_IMAGE
    scene("cat", 512).save(path, optimize=True)
    written.append(path)
    for name, spec in THUMBNAILS.items():
        path = out_dir / f"{name}.jpg"
        thumbnail(*spec).save(path, quality=82, optimize=True, progressive=True)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR):
        print(f"{p} ({p.stat().st_size / 1024:.1f} KB)")
