"""Quality gates for faces: size, detection score, blur. Every failure is named."""

from __future__ import annotations

from dataclasses import dataclass, field

from facerec.config import QualityConfig
from udfs.detectors.base import Detection


@dataclass(frozen=True)
class Quality:
    face_px: float
    score: float
    sharpness: float
    reasons: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "face_px": round(self.face_px, 1),
            "score": round(self.score, 4),
            "sharpness": round(self.sharpness, 1),
            "reasons": list(self.reasons),
        }


def assess(det: Detection, face_sharpness: float, config: QualityConfig) -> Quality:
    face_px = min(det.width, det.height)
    reasons = []
    if face_px < config.min_face_px:
        reasons.append(f"too_small: face is {face_px:.0f} px, minimum {config.min_face_px}")
    if det.score < config.min_score:
        reasons.append(f"low_score: detection score {det.score:.2f}, minimum {config.min_score}")
    if face_sharpness < config.min_sharpness:
        reasons.append(
            f"too_blurry: sharpness {face_sharpness:.1f}, minimum {config.min_sharpness}"
        )
    return Quality(
        face_px=face_px, score=det.score, sharpness=face_sharpness, reasons=tuple(reasons)
    )
