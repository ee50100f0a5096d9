"""Hugging Face Spaces / local entry point: `python app.py` (the app lives in fer_lab.app)."""
from fer_lab.app import build_demo, launch_kwargs

demo = build_demo()

if __name__ == "__main__":
    demo.launch(**launch_kwargs())
