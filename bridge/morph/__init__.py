"""Latent control: interpolation (slerp), audio-driven walks (navigators), anchors."""
from bridge.morph.latent import Navigator, approach, ease_in_out, lerp, slerp

__all__ = ["Navigator", "approach", "ease_in_out", "lerp", "slerp"]
