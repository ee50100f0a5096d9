"""The Gradio demo: baseline vs EfficientFace side by side (see docs/app.md).

``build_demo()`` loads the shipped weights once and returns the ``gr.Blocks``;
``launch_kwargs()`` holds what Gradio 6 wants at ``launch`` (upload cap, theme, css).
Needs the ``app`` extra (gradio).
"""
from .events import AppEngine
from .hub import ModelHub
from .ui import build_demo, launch_kwargs

__all__ = ["build_demo", "launch_kwargs", "AppEngine", "ModelHub"]
