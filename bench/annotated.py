"""Real photos with faces boxed by hand, for the recall benchmark and its test.

The format is dlib's imglab XML (``<image file=...><box top= left= width= height=/>``),
the one dlib's own face examples use: small PASCAL VOC group photos (about 500x375) whose
faces were boxed by people, 37-109 px wide, in crowds, at angles, in old photos. Nobody
here made them, so they check what the pasted faces of bench.photos cannot.

Where they come from: dlib 19.5.0's source distribution on PyPI (``dlib-19.5.0.tar.gz``,
2017, 46.8 MB) ships dlib's ``examples/faces`` inside its documentation cache
(``docs/docs/cache/examples/faces``): 9 photos, 43 faces, ``training.xml`` and
``testing.xml`` with the same boxes as dlib's source tree. ``fetch()`` downloads that one
file from files.pythonhosted.org, checks its SHA-256 (PyPI's), and keeps only that folder
in ``$FACE_REACTOR_FACES_CACHE`` (default ``~/.cache/face-reactor-faces``); CI runs it
before the tests (``python -m bench.annotated``). Nothing here installs or builds that
dlib: it is read as an archive. The project commits no copy; the benchmark and the CPU
test (tests/test_detector_recall.py) only read them; the service never does.
``REACTOR_ANNOTATED_FACES`` (or ``bench.recall --annotated DIR``) names another copy of
the folder, dlib's source tree's for instance.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from bench.photos import Photo, _scaled
from reactor.ops import samples

# A copy of the annotated folder, for the CPU test (tests/test_detector_recall.py).
ENV = "REACTOR_ANNOTATED_FACES"
# The two photos of the set the CPU test uses at their size: 14 faces of 37-45 px.
SMALL_FACES = ("2007_007763.jpg", "2008_004176.jpg")
# The photo the CPU test enlarges four times: a 45 px face (180 px) that HOG scores just
# under dlib's threshold at the size the budget scans it (docs/benchmarks.md, 11).
X4_FACES = "2007_007763.jpg"

SDIST_URL = (
    "https://files.pythonhosted.org/packages/82/68/"
    "3c471ddd73afb1378eee507d765bf186e724e8bc81eb44501a99345d89c7/dlib-19.5.0.tar.gz"
)
SDIST_SHA256 = "b5896c7a51992441eac605395e07f2b31548376cadc1f392d93f69c821e6552e"
SDIST_FOLDER = "dlib-19.5.0/docs/docs/cache/examples/faces/"
CACHE = Path(os.environ.get("FACE_REACTOR_FACES_CACHE", Path.home() / ".cache" / "face-reactor-faces"))


def cached(cache: Path = CACHE) -> Path:
    """Where ``fetch`` keeps the folder (it may not be there yet)."""
    return cache / SDIST_SHA256[:16] / "faces"


def folder() -> Path | None:
    """The annotated folder to read: ``REACTOR_ANNOTATED_FACES``, else the fetched copy."""
    for candidate in (os.environ.get(ENV, ""), str(cached())):
        if candidate and Path(candidate, "training.xml").is_file():
            return Path(candidate)
    return None


def fetch(cache: Path = CACHE) -> Path:
    """The folder from dlib 19.5.0's sdist, downloaded and checked once per machine."""
    target = cached(cache)
    if (target / "training.xml").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "dlib.tar.gz"
        digest = hashlib.sha256()
        with urllib.request.urlopen(SDIST_URL, timeout=60) as response, archive.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != SDIST_SHA256:
            raise RuntimeError(f"{SDIST_URL}: SHA-256 {digest.hexdigest()}, expected {SDIST_SHA256}")
        staged = Path(tmp) / "faces"
        staged.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix(SDIST_FOLDER)
                if member.isfile() and member.name.startswith(SDIST_FOLDER) and "/" not in name:
                    source = tar.extractfile(member)
                    assert source is not None
                    with source, (staged / name).open("wb") as out:
                        shutil.copyfileobj(source, out)
        if not (staged / "training.xml").is_file():
            raise RuntimeError(f"{SDIST_URL}: no {SDIST_FOLDER}training.xml in it")
        staged.rename(target)  # whole or not at all: a second fetch finds it complete
    return target


def load(folder: Path) -> list[Photo]:
    """Every annotated photo of every imglab XML file in ``folder``, in file order."""
    out: list[Photo] = []
    for xml in sorted(folder.glob("*.xml")):
        if xml.name.endswith("_with_face_landmarks.xml"):
            continue  # the same photos again, with landmarks
        for image in ET.parse(xml).getroot().iter("image"):
            faces = []
            for box in image.iter("box"):
                if box.get("ignore") == "1":
                    continue
                top, left = int(box.get("top", 0)), int(box.get("left", 0))
                width, height = int(box.get("width", 0)), int(box.get("height", 0))
                faces.append((top, left + width, top + height, left))
            out.append(Photo(folder / str(image.get("file")), tuple(faces)))
    return out


def enlarged(items: list[Photo], folder: Path, factor: int) -> list[Photo]:
    """The same photos ``factor`` times wider and higher (bicubic), as a camera with more
    pixels would take them, with their boxes scaled alike."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for photo in items:
        with Image.open(photo.path) as image:
            rgb = image.convert("RGB")
        big = rgb.resize((rgb.width * factor, rgb.height * factor), Image.Resampling.BICUBIC)
        path = samples.write_jpeg(big, folder, f"x{factor}_{photo.path.name}", quality=92)
        out.append(Photo(path, tuple(_scaled(box, factor) for box in photo.faces)))
    return out


if __name__ == "__main__":
    print(fetch())
