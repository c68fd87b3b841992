"""Real photos with faces boxed by hand, for the recall benchmark and its test.

The format is dlib's imglab XML (``<image file=...><box top= left= width= height=/>``),
the one dlib's own face examples use: small PASCAL VOC group photos (about 500x375) whose
faces were boxed by people, 37-109 px wide, in crowds, at angles, in old photos. Nobody
here made them, so they check what the pasted faces of bench.photos cannot.

Where they come from (docs/benchmarks.md says more): no package on the registries ships
them, and the project commits no copy; the whole set (9 photos, 43 faces: ``training.xml``
and ``testing.xml`` with their JPEGs) is read from the folder given to ``bench.recall
--annotated`` or named by ``REACTOR_ANNOTATED_FACES`` (dlib's ``examples/faces`` in its
source tree), which the CPU test (tests/test_detector_recall.py) also reads when it is set.
The benchmark and the test only read them; the service never does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from bench.photos import Photo, _scaled
from reactor.ops import samples

# The folder of the annotated set, for the CPU test (tests/test_detector_recall.py).
ENV = "REACTOR_ANNOTATED_FACES"
# The two photos of the set the CPU test uses: 14 faces of 37-45 px.
SMALL_FACES = ("2007_007763.jpg", "2008_004176.jpg")


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
