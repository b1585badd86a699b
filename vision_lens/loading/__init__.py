"""Loaders: conversion of other libraries' models into vision_lens models."""

from vision_lens.loading.base import LoadedTower
from vision_lens.loading.open_clip import (
    UnsupportedModelError,
    check_open_clip_config,
    config_from_visual,
    convert_visual_state_dict,
)

__all__ = [
    "LoadedTower",
    "UnsupportedModelError",
    "check_open_clip_config",
    "config_from_visual",
    "convert_visual_state_dict",
]
