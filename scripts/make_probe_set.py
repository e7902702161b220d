"""Rebuild data/probe-224 (the embedded probe set) from the 1000 ImageNet samples.

    python scripts/make_probe_set.py ../shared/data/imagenet-samples

Each image: shorter side resized to 224, centre-cropped to 224x224 (what the
network sees), saved as JPEG quality 85 (~15 KB), keeping ``<wnid>_<name>``.
The result is deterministic for the same inputs and Pillow version.
"""
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lab_utils.images import fit, to_rgb  # noqa: E402

SIZE, QUALITY = 224, 85


def main(src: str, dst: str = "data/probe-224") -> None:
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(src).glob("*.JPEG"))
    for f in files:
        img = Image.fromarray(fit(to_rgb(Image.open(f)), SIZE))
        img.save(out / (f.stem + ".jpg"), quality=QUALITY, optimize=True)
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"{len(files)} images, {total / 1e6:.1f} MB in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
