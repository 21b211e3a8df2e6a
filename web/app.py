"""The page: four tabs (Classify with its corrections, Review, Model), each control wired to a few lines
over `web.clients` and `web.views`. Every handler answers with a message instead of raising, so a function
that is down, slow or refusing shows as a sentence on the page, never as a traceback or a spinner.

Each event has an API name, so `gradio_client` can do what the page does: `/classify`, `/correct`,
`/review_queue`, `/accept`, `/relabel`, `/reject`, `/exclude`, `/retraining`, `/model`.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import gradio as gr
import pandas as pd
from gradio import FileData
from PIL import Image

from functions.lib.config import Settings
from functions.lib.layout import MODEL_NAME
from web import views
from web.clients import Functions, WebError, registered_versions

QUEUE_SHOWN = 60  # review items shown at once
PARALLEL_CLASSIFICATIONS = 4  # one batch's requests in flight: predict's instances do the work
CONCURRENT_EVENTS = 8  # events served at once, across all visitors


def _classify_one(functions: Functions, path: str) -> views.Result:
    name = Path(path).name
    try:
        return views.Result(name, path, functions.classify(name, Path(path).read_bytes()))
    except (WebError, OSError) as exc:
        return views.Result(name, path, error=str(exc))


def classify(functions: Functions, images: list[tuple[str, str | None]] | None) -> tuple[Any, ...]:
    """Classify up to MAX_IMAGES images: the results and the first selected, the gallery, the bars and
    name of the selected one, the table, the CSV, a message."""
    paths = [path for path, _caption in images or []]
    if not paths:
        return [], 0, [], None, "", [], None, "Add one image or several first (drop, paste or upload)."
    sent, dropped = paths[: views.MAX_IMAGES], max(0, len(paths) - views.MAX_IMAGES)
    with ThreadPoolExecutor(PARALLEL_CLASSIFICATIONS) as pool:
        results = list(pool.map(functools.partial(_classify_one, functions), sent))
    table_file = Path(tempfile.mkdtemp(prefix="dandelion-")) / "dandelion-results.csv"  # Gradio serves it
    table_file.write_text(views.to_csv(results))
    gallery = [(result.path, result.caption()) for result in results]
    message = views.summary(results, dropped)
    first = results[0]
    shown = (views.confidences(first), views.selection(first))
    return results, 0, gallery, *shown, views.table(results), str(table_file), message


def correct(functions: Functions, results: list[views.Result], index: int | None, right: bool) -> str:
    """'This is right' / 'this is wrong' on the selected result: a submission to validate-label."""
    if not results:
        return "Classify an image first."
    result = results[index or 0]
    try:
        label = views.correction(result, right)
        answer = functions.submit(result.name, Path(result.path).read_bytes(), label, result.answer or {})
    except (WebError, OSError) as exc:
        return f"Not sent: {exc}"
    return views.thanks(result, label, answer)


def review_queue(functions: Functions, token: str) -> tuple[Any, ...]:
    """The pending items with their images, and how far the next retraining is."""
    try:
        items = functions.queue(token, QUEUE_SHOWN)
        status = views.retraining(functions.retraining(token))
        gallery = [
            (Image.open(io.BytesIO(functions.image(token, item["id"]))), views.item_caption(item))
            for item in items
        ]
    except WebError as exc:
        return [], [], None, f"Not loaded: {exc}", ""
    if not items:
        return [], [], None, "Nothing waits for review.", status
    first = items[0]["id"]
    return items, gallery, first, f"{len(items)} waiting; select one, then decide.", status


def decide(functions: Functions, action: str, token: str, item_id: float | None) -> tuple[Any, ...]:
    """A button on the selected item, then the queue again."""
    try:
        if item_id is None:
            raise WebError("select an item first")
        item = next((i for i in functions.queue(token, QUEUE_SHOWN) if i["id"] == int(item_id)), None)
        if item is None:
            raise WebError(f"#{int(item_id)} is no longer waiting for review")
        decision, label = views.decision(item, action)
        message = views.decided(functions.decide(token, item["id"], decision, label))
    except WebError as exc:
        return (*review_queue(functions, token)[:3], f"Not decided: {exc}", gr.skip())
    items, gallery, first, _waiting, status = review_queue(functions, token)
    return items, gallery, first, message, status


def model_tab(functions: Functions, settings_links: str) -> tuple[Any, ...]:
    """The champion, the accuracy of every registered version, links to the other UIs."""
    try:
        versions = registered_versions()
    except WebError as exc:
        versions, note = [], f"\n\n{exc}"
    else:
        note = ""
    try:
        text = views.champion(functions.model_info(), versions)
    except WebError as exc:
        text = f"No model serves: {exc}"
    points = pd.DataFrame(views.accuracy_points(versions), columns=["version", "test_accuracy", "champion"])
    return text + note, points, settings_links


def build(settings: Settings) -> gr.Blocks:
    functions = Functions.at(settings.predict_url, settings.labels_url)
    links = views.links(settings.mlflow_url, settings.argo_url, settings.grafana_url, MODEL_NAME)
    bind = functools.partial

    def correct_api(
        image: FileData, label: str, predicted_class: str, confidence: float, model_version: str
    ) -> str:
        """Send an image with the label you believe is right, and what the model said about it."""
        path = Path(cast(dict[str, Any], image)["path"])  # the hint shapes the API; a dict arrives
        said = {"predicted_class": predicted_class, "confidence": confidence, "model_version": model_version}
        try:
            answer = functions.submit(path.name, path.read_bytes(), label, said)
        except (WebError, OSError) as exc:
            return f"Not sent: {exc}"
        return views.thanks(views.Result(path.name, str(path)), label, answer)

    with gr.Blocks(title="Dandelion", analytics_enabled=False) as page:
        gr.Markdown("# Dandelion\nTells photos of dandelions from photos of grass.")
        with gr.Tab("Classify"):
            results = gr.State([])
            selected = gr.State(0)
            images = gr.Gallery(
                label="Images: drop, paste or upload one or many",
                type="filepath",
                sources=["upload", "clipboard"],
                interactive=True,
                columns=6,
                height=220,
                file_types=["image"],
            )
            run = gr.Button("Classify", variant="primary")
            message = gr.Markdown(elem_id="classify-message")
            with gr.Row():
                shown = gr.Gallery(
                    label="Results (select one to correct it)", columns=4, height=300, interactive=False
                )
                bars = gr.Label(label="Confidence", num_top_classes=2)
            chosen = gr.Markdown(elem_id="selected-result")
            with gr.Row():
                right = gr.Button("✓ This is right")
                wrong = gr.Button("✗ This is wrong")
            thanks = gr.Markdown(elem_id="correct-message")
            rows = gr.Dataframe(headers=list(views.TABLE_COLUMNS), label="Results", interactive=False)
            download = gr.File(label="Results as CSV")

            outputs = [results, selected, shown, bars, chosen, rows, download, message]
            run.click(bind(classify, functions), images, outputs, api_name="classify")

            def pick(found: list[views.Result], event: gr.SelectData) -> tuple[int, Any, str]:
                result = found[event.index]
                return event.index, views.confidences(result), views.selection(result)

            shown.select(pick, results, [selected, bars, chosen], api_visibility="private")
            right.click(
                bind(correct, functions, right=True), [results, selected], thanks, api_visibility="private"
            )
            wrong.click(
                bind(correct, functions, right=False), [results, selected], thanks, api_visibility="private"
            )
            gr.api(correct_api, api_name="correct")

        with gr.Tab("Review"):
            gr.Markdown(
                "For the admin: submissions and the labels the audit doubts. The token stays in this page."
            )
            with gr.Row():
                token = gr.Textbox(label="Admin token", type="password", scale=3)
                load = gr.Button("Sign in / refresh", scale=1)
            notice = gr.Markdown(elem_id="review-message")
            status = gr.Markdown(elem_id="retrain-status")
            items = gr.State([])
            queue = gr.Gallery(label="Waiting for review", columns=4, height=360, interactive=False)
            with gr.Row():
                item_id = gr.Number(label="Selected item", precision=0, interactive=False)
                buttons = {action: gr.Button(action.capitalize()) for action in views.ACTIONS}
            review_outputs = [items, queue, item_id, notice, status]
            load.click(bind(review_queue, functions), token, review_outputs, api_name="review_queue")
            for action, button in buttons.items():
                button.click(
                    bind(decide, functions, action), [token, item_id], review_outputs, api_name=action
                )

            def choose(found: list[dict[str, Any]], event: gr.SelectData) -> tuple[int, str]:
                item = found[event.index]
                return item["id"], views.item_caption(item)

            queue.select(choose, items, [item_id, notice], api_visibility="private")

        with gr.Tab("Model") as model:
            champion = gr.Markdown(elem_id="champion")
            plot = gr.LinePlot(
                x="version", y="test_accuracy", label="Test accuracy of each registered version"
            )
            linked = gr.Markdown()
            refresh = gr.Button("Refresh")
            model_outputs = [champion, plot, linked]
            refresh.click(bind(model_tab, functions, links), None, model_outputs, api_name="model")
            model.select(bind(model_tab, functions, links), None, model_outputs, api_visibility="private")
    page.queue(default_concurrency_limit=CONCURRENT_EVENTS)
    return page


def serve(settings: Settings, host: str, port: int) -> None:
    """`dandelion serve web`: the page on host:port until the process is stopped (as a Knative Service)."""
    # MLflow's client retries a down server for minutes by default; the page must answer in seconds.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # The system's fonts: the theme's Google fonts cannot be fetched offline, and would delay the page.
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace"])
    build(settings).launch(
        server_name=host, server_port=port, ssr_mode=False, theme=theme, quiet=True, footer_links=["api"]
    )
