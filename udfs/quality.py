"""Quality gates for faces: size, detection score, blur, head turn and face scale from the
landmarks. Every failure is named: ``<code>: <what was measured>, <the limit>``.

Codes: ``too_small`` (the box, or the landmarks' face scale, below the minimum),
``low_score``, ``too_blurry``, ``turned_away`` (estimated yaw above the maximum)."""

from __future__ import annotations

from dataclasses import dataclass, field

from facerec.config import QualityConfig
from udfs.align import face_scale_px, yaw_deg
from udfs.detectors.base import Detection


@dataclass(frozen=True)
class Quality:
    face_px: float
    score: float
    sharpness: float
    reasons: tuple[str, ...] = field(default=())
    yaw_deg: float | None = None
    """Estimated head turn from the landmarks (udfs.align.yaw_deg); None without them."""
    scale_px: float | None = None
    """Face scale from the landmarks (udfs.align.face_scale_px); None without them."""

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "ok": self.ok,
            "face_px": round(self.face_px, 1),
            "score": round(self.score, 4),
            "sharpness": round(self.sharpness, 1),
            "reasons": list(self.reasons),
        }
        if self.yaw_deg is not None:
            out["yaw_deg"] = round(self.yaw_deg, 1)
        if self.scale_px is not None:
            out["scale_px"] = round(self.scale_px, 1)
        return out


def assess(
    det: Detection,
    face_sharpness: float,
    config: QualityConfig,
    aligned: Detection | None = None,
) -> Quality:
    """``det``: the detector's box and score; ``aligned``: where landmarks come from (O-Net's,
    or ``det`` itself when the detector gives them)."""
    face_px = min(det.width, det.height)
    marks = aligned if aligned is not None and aligned.landmarks else det
    yaw = yaw_deg(marks)
    scale = face_scale_px(marks)
    reasons = []
    if face_px < config.min_face_px:
        reasons.append(f"too_small: face is {face_px:.0f} px, minimum {config.min_face_px}")
    elif scale is not None and scale < config.min_eye_distance_px:
        reasons.append(
            f"too_small: landmarks {scale:.0f} px apart, minimum {config.min_eye_distance_px:g}"
        )
    if det.score < config.min_score:
        reasons.append(f"low_score: detection score {det.score:.2f}, minimum {config.min_score}")
    if face_sharpness < config.min_sharpness:
        reasons.append(
            f"too_blurry: sharpness {face_sharpness:.1f}, minimum {config.min_sharpness}"
        )
    if yaw is not None and abs(yaw) > config.max_yaw_deg:
        reasons.append(
            f"turned_away: head turned ~{abs(yaw):.0f} degrees, maximum {config.max_yaw_deg:g}"
        )
    return Quality(
        face_px=face_px,
        score=det.score,
        sharpness=face_sharpness,
        reasons=tuple(reasons),
        yaw_deg=yaw,
        scale_px=scale,
    )
