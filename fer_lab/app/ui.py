"""Gradio Blocks layout: wires components to :class:`fer_lab.app.events.AppEngine` methods.

No model, image or plotting code here; every event has an explicit ``api_name`` (the HTTP /
``gradio_client`` API is documented in the README and docs/app.md).  The page's events are
private; the public endpoints are API-only events on the same components (same inputs, outputs
and names as before), so the page can show expected states in its status line while API clients
keep getting errors for them.
"""
from __future__ import annotations

import os

import gradio as gr

from ..analysis.cam import CAM_METHODS
from .events import MAX_BATCH_FILES, NO_IMAGE, SIDES, AppEngine
from .examples import example_images

__all__ = ["build_demo", "launch_kwargs", "example_images", "ImagePath", "QUEUE_SIZE", "CONCURRENCY",
           "MAX_FILE_SIZE"]

QUEUE_SIZE = 32          # waiting requests beyond this are refused ("queue full") instead of piling up
CONCURRENCY = 2          # events running at once, all event types together (2 vCPU on a CPU-Basic Space)
POOL = "cpu"             # shared concurrency_id: detect/analyze/batch/load compete for the same cores
# one intra-op thread per request: two requests use both vCPUs, and a busy neighbour cannot stall
# OpenMP barriers (measured on the shared 2-core dev box: 47 ms vs 650 ms per forward, docs/app.md)
TORCH_THREADS = int(os.environ.get("FER_LAB_TORCH_THREADS", "1"))
MAX_FILE_SIZE = "64mb"   # upload cap (the authors' MS-Celeb-pretrained file is ~60 MB; images are
                         # further limited by fer_lab.io: 64 MB, 120 MP)
TITLES = {"baseline": "Baseline (ShuffleNet-V2)", "efficientface": "EfficientFace"}
# crops and CAMs are model-sized (48-112 px): show them enlarged, without smoothing
CSS = (".cam img, .crop img { min-width: 192px; min-height: 192px; object-fit: contain; "
       "image-rendering: pixelated; }")


class ImagePath(gr.Image):
    """``gr.Image`` that hands the uploaded file over undecoded.

    ``gr.Image`` opens uploads with PIL itself (non-images, zero-byte files and bombs fail there
    with an opaque message); here :func:`fer_lab.io.load_image` does all decoding and checks, so
    the UI and the API get the same clear errors.  Same front-end as ``gr.Image``.
    """

    is_template = True  # render with the stock Image front-end

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path and not (payload.url or "").startswith("data:"):
            return payload.path
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except Exception as e:
            raise gr.Error(f"Could not read the image: {e}", print_exception=False) from None


def launch_kwargs() -> dict:
    """Arguments for ``demo.launch`` (Gradio 6: theme/css belong to launch)."""
    return {"max_file_size": MAX_FILE_SIZE, "theme": gr.themes.Soft(), "css": CSS, "ssr_mode": False}


def build_demo(engine: AppEngine | None = None, *, queue_size: int = QUEUE_SIZE,
               concurrency: int = CONCURRENCY, torch_threads: int | None = TORCH_THREADS,
               warmup: bool = True) -> gr.Blocks:
    """Build the app; models are loaded here, once (``engine`` defaults to the shipped weights).

    ``torch_threads`` sets torch's (process-wide) intra-op threads; None leaves it alone.
    """
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    engine = engine if engine is not None else AppEngine()
    if warmup:
        engine.warmup()
    choices = engine.model_choices()
    defaults = [engine.hub.default_for(i) for i in range(len(SIDES))]

    # delete_cache: uploads and outputs older than 1 h are removed every 30 min (public Space)
    with gr.Blocks(title="fer_lab: EfficientFace vs baseline", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# Facial expression recognition: baseline vs EfficientFace\n"
                    "Upload a photo (or use the webcam / clipboard / an example). Every face is detected; "
                    "pick one to see what each model predicts, its full label distribution and where it "
                    "looks (class activation map). Models from Zhao et al., *Robust Lightweight Facial "
                    "Expression Recognition Network with Label Distribution Training*, AAAI 2021.")
        warning = engine.hub.startup_message()
        gr.Markdown(warning, visible=bool(warning), elem_id="startup-warning")

        with gr.Tab("Single image"):
            with gr.Row():
                with gr.Column():
                    image = ImagePath(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                      label="Input image", elem_id="input-image")
                    caption = gr.Textbox(label="Example (expected label)", interactive=False, max_lines=2,
                                         placeholder="Pick an example below to see what it should show",
                                         elem_id="example-caption")
                    with gr.Row():
                        whole = gr.Checkbox(False, label="Use the whole image (no face detection)",
                                            elem_id="whole-image")
                        method = gr.Dropdown(list(CAM_METHODS), value=CAM_METHODS[0], label="CAM method",
                                             elem_id="cam-method")
                    tta = gr.Checkbox(False, label="Also score the mirrored face and average (flip TTA, 2x model "
                                      "cost; +0.6 to 0.8 points on FER+ test)", elem_id="tta-flip")
                    if engine.examples:
                        # "Use the whole image" is set by new_image from the image itself, so an
                        # upload after a synthfer example starts with face detection again
                        gr.Examples([[e.path, e.caption] for e in engine.examples], inputs=[image, caption],
                                    label="Examples (license-clean)", api_name="example",
                                    api_visibility="undocumented")
                with gr.Column():
                    annotated = gr.Image(label="Detected faces", format="jpeg", interactive=False,
                                         elem_id="faces-image")
                    face = gr.Dropdown(choices=[], label="Face", allow_custom_value=True, elem_id="face-picker")
                    status = gr.Markdown(label="Status", elem_id="status")
                    crop = gr.Image(label="Crop the model sees", format="png", interactive=False, height=224,
                                    elem_classes="crop", elem_id="crop")
            model_boxes, side_outputs = [], []
            with gr.Row():
                for side, default in zip(SIDES, defaults):
                    with gr.Column():
                        gr.Markdown(f"## {TITLES[side]}")
                        model_boxes.append(gr.Dropdown(choices, value=default, label="Weights",
                                                       allow_custom_value=True, elem_id=f"{side}-model"))
                        side_outputs += [
                            gr.Markdown(label=f"{side} prediction", elem_id=f"{side}-label"),
                            gr.Plot(label="Label distribution", elem_id=f"{side}-plot"),
                            gr.Image(label="Class activation map", format="png", interactive=False,
                                     height=224, elem_classes="cam", elem_id=f"{side}-cam"),
                            gr.Markdown(label=f"{side} timing", elem_id=f"{side}-time"),
                        ]
            with gr.Accordion("Raw output (JSON)", open=False):
                details = gr.JSON(label="Summary", elem_id="details")

        with gr.Tab("Batch"):
            gr.Markdown(f"Score up to {MAX_BATCH_FILES} images with both models: one row per face; the CSV "
                        "holds the full probability vectors.")
            files = gr.File(file_count="multiple", type="filepath", label="Images", elem_id="batch-files")
            with gr.Row():
                batch_whole = gr.Checkbox(False, label="Use the whole images (no face detection)")
                batch_tta = gr.Checkbox(False, label="Flip TTA (average with the mirrored face, 2x cost)")
            run_batch = gr.Button("Run batch", variant="primary", elem_id="run-batch")
            table = gr.Dataframe(label="Per-face predictions", interactive=False, elem_id="batch-table")
            csv_file = gr.File(label="CSV", interactive=False, elem_id="batch-csv")

        with gr.Tab("Models"):
            gr.Markdown("Shipped weights: " + (", ".join(f"`{c}`" for c in choices) or "none") +
                        ". Load your own checkpoint: fer_lab's `.safetensors` (carries its labels, input size, "
                        "normalisation and crop recipe) or the authors' published EfficientFace files "
                        "(`.pth.tar` / `.tar`; RAF-DB normalisation and 224 px assumed).")
            ckpt_file = gr.File(label="Checkpoint file", type="filepath",
                                file_types=[".safetensors", ".tar", ".pth", ".pt", ".bin"], elem_id="ckpt-file")
            ckpt_path = gr.Textbox(label="...or a path on this machine", visible=engine.allow_local_paths,
                                   placeholder="/path/to/model.safetensors")
            ckpt_side = gr.Radio(list(SIDES), value="efficientface", label="Show it in column")
            load_btn = gr.Button("Load checkpoint", elem_id="load-ckpt")
            ckpt_status = gr.Markdown(label="Checkpoint status")
            gr.Markdown("### How a model does on every class\nAccuracy alone hides the rare expressions: "
                        "balanced accuracy is the mean recall over classes; the heat map shows, per true "
                        "class (row), where its faces go.")
            report_model = gr.Dropdown(choices, value=defaults[-1], label="Model", allow_custom_value=True,
                                       elem_id="report-model")
            report_text = gr.Markdown(elem_id="report-text")
            report_plot = gr.Plot(label="Confusion matrix (row-normalised)", elem_id="report-plot")

        # tta last: API clients written before it existed keep working (it defaults to off)
        detect_inputs, detect_outputs = [image, whole], [annotated, face, status]
        analyze_inputs = [image, face, whole, method, *model_boxes, tta]
        analyze_outputs = [annotated, crop, status, *side_outputs, details]
        ui = {"api_visibility": "private", "concurrency_id": POOL}

        # the page: any new image (upload, webcam, clipboard, example, cleared) sets the whole-image
        # box from the image itself, then detection, then analysis; the user ticking the box re-detects
        gr.on([image.change], engine.new_image, inputs=[image],
              outputs=[image, whole, caption, *detect_outputs], api_name="ui_new_image",
              trigger_mode="always_last", **ui).success(
            engine.analyze_ui, inputs=analyze_inputs, outputs=analyze_outputs, api_name="ui_new_image_analyze", **ui)
        image.clear(lambda: NO_IMAGE, outputs=[status], api_name="ui_clear", queue=False,
                    api_visibility="private")
        gr.on([whole.input], engine.detect, inputs=detect_inputs, outputs=detect_outputs, api_name="ui_whole",
              trigger_mode="always_last", **ui).success(
            engine.analyze_ui, inputs=analyze_inputs, outputs=analyze_outputs, api_name="ui_whole_analyze", **ui)
        gr.on([face.input, method.change, tta.change, *[b.input for b in model_boxes]], engine.analyze_ui,
              inputs=analyze_inputs, outputs=analyze_outputs, api_name="ui_analyze", trigger_mode="always_last",
              **ui)
        # the API (no UI trigger): no face / an unreadable image are errors here, not a status line
        gr.on([], engine.detect, inputs=detect_inputs, outputs=detect_outputs, api_name="detect",
              concurrency_id=POOL)
        gr.on([], engine.analyze, inputs=analyze_inputs, outputs=analyze_outputs, api_name="analyze",
              concurrency_id=POOL)
        run_batch.click(engine.batch, inputs=[files, batch_whole, *model_boxes, batch_tta], outputs=[table, csv_file],
                        api_name="batch", concurrency_id=POOL)
        load_btn.click(engine.load_checkpoint, inputs=[ckpt_file, ckpt_path, ckpt_side],
                       outputs=[ckpt_status, *model_boxes], api_name="load_checkpoint", concurrency_id=POOL).success(
            lambda: gr.update(choices=engine.model_choices()), outputs=[report_model], queue=False,
            api_visibility="private")
        report_model.change(engine.model_report, inputs=[report_model], outputs=[report_text, report_plot],
                            api_name="model_report", concurrency_id=POOL)
        demo.load(engine.model_report, inputs=[report_model], outputs=[report_text, report_plot],
                  api_visibility="private", queue=False)

    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    demo.engine = engine
    return demo
