"""Face detection in an isolated, supervised child process.

This package is the only code that imports dlib or face_recognition, and only inside the
child (``engine``); the reactor process imports nothing heavier than Pillow from here.
"""

from reactor.detector.parent import Detector, DetectorUnavailable
from reactor.detector.types import Detection, DetectionFailure, DetectionJob, DetectorState, Face, Outcome

__all__ = [
    "Detection",
    "DetectionFailure",
    "DetectionJob",
    "Detector",
    "DetectorState",
    "DetectorUnavailable",
    "Face",
    "Outcome",
]
