"""What a reader does with each notebook's explorer widget, and what the page must then show.

Each interaction takes the `LabPage` after Run All and returns a list of problems (empty: the widget responded as
it should). Notebooks without an entry in `INTERACTIONS` get `poke_widgets`, a generic try of their controls.
"""

from __future__ import annotations

import dataclasses
import html
import json
from functools import lru_cache
from pathlib import Path

from labdriver import LabPage, html_text, plain

# -------------------------------------------------------------------------------------------------- 00_quickstart

# Not among the inputs the notebook itself tries, so the view must change when they are typed: not a sum (the
# explorer must show seqnb's error message), longer than training, in distribution (left on screen).
QUICKSTART_PROBLEMS = ["5 plus 7", "4021+978", "58+67"]


@lru_cache(maxsize=4)
def _trained_quickstart(run_dir: str):
    """The model and config of the newest checkpoint in a quickstart run folder, rebuilt with seqnb."""
    from safetensors.torch import load_model

    from seqnb.papers.quickstart import experiment as qs
    from seqnb.papers import paper_module, resolve_config

    steps = sorted((Path(run_dir) / "checkpoints" / "train").glob("step_*"))
    if not steps:
        raise FileNotFoundError(f"no training checkpoint under {run_dir}/checkpoints/train")
    # the checkpoint's fingerprint: the loop's arguments, and in `settings` the config's other fields
    fingerprint = json.loads(json.loads((steps[-1] / "trainer_state.json").read_text())["fingerprint"])
    values = {**fingerprint.pop("settings"), **fingerprint}
    fields = {f.name for f in dataclasses.fields(paper_module("00_quickstart", "config").Config)} - {"notebook"}
    cfg = resolve_config("00_quickstart", "tiny", **{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in values.items() if k in fields},
                         output_dir=run_dir)
    model, tokenizer = qs.build_model(cfg)
    load_model(model, str(steps[-1] / "model.safetensors"))
    return model.eval(), tokenizer, cfg


def expected_quickstart_answer(run_dir: Path, problem: str) -> str:
    """The text the quickstart explorer must show for `problem`: what seqnb returns with the run's trained model."""
    from seqnb.papers.quickstart import experiment as qs

    model, tokenizer, cfg = _trained_quickstart(str(run_dir))
    try:
        fragment = qs.answer_html(qs.solve(model, tokenizer, problem, cfg), cfg.train_digits)
    except ValueError as e:  # the explorer shows bad input as this message
        fragment = html.escape(str(e))
    return plain(fragment)


def check_prompt_explorer(lab: LabPage, problem: str, run_dir: Path, nth: int = -1) -> list[str]:
    """Type `problem` into a PromptExplorer, press Answer, compare the answer shown with seqnb's."""
    box = lab.widget_with_button("Answer", nth)
    result = box.locator(".widget-html-content")
    before = html_text(result)
    expected = expected_quickstart_answer(run_dir, problem)
    box.locator("input[type=text]").fill(problem)
    shown = lab.press_and_wait(box, "Answer", lambda: html_text(result), before,
                               timeout=5 if before == expected else 60)
    if shown != expected:
        return [f"for {problem!r} the explorer shows {shown!r}, but seqnb with the trained model in {run_dir} "
                f"returns {expected!r}"]
    return []


def quickstart(lab: LabPage, runs: Path) -> list[str]:
    run_dir = runs / "00_quickstart" / "tiny-seed0"
    found = []
    for problem in QUICKSTART_PROBLEMS:
        found += check_prompt_explorer(lab, problem, run_dir)
    lab.screenshot("00_quickstart", lab.widget_with_button("Answer"))
    return found


# ------------------------------------------------------------------------------------- 01_warmup_generations


def warmup_generations(lab: LabPage, runs: Path) -> list[str]:
    """WarmupExplorer: pick the first recorded training step, then another input; the table must follow both."""
    box = lab.page.locator(".jp-OutputArea-output .widget-vbox").filter(
        has=lab.page.locator(".widget-toggle-buttons")).last
    box.wait_for(timeout=30000)
    view = lambda: html_text(box.locator(".widget-html-content"))  # noqa: E731
    found = []
    before = view()
    first_step = box.locator(".widget-toggle-buttons button").first
    label = first_step.inner_text().strip()
    first_step.click()
    early = lab.wait_change(view, before, timeout=30)
    if early == before or f"step {label}" not in early:
        found.append(f"choosing step {label} did not show that step's warmups: {early[:200]!r}")
    select = box.locator("select").first
    other = select.locator("option").nth(1).inner_text().strip()
    select.select_option(index=1)
    moved = lab.wait_change(view, early, timeout=30)
    if moved == early or f"x = {other}" not in moved:
        found.append(f"choosing input {other} did not show its warmups: {moved[:200]!r}")
    lab.screenshot("01_warmup_generations", box)
    return found


# -------------------------------------------------------------------------------------- 02_end_to_end_planner


def end_to_end_planner(lab: LabPage, runs: Path) -> list[str]:
    """PlannerExplorer: force an action, then another one; the forced continuation must change with it."""
    box = lab.widget_with_button("Continue")
    view = lambda: html_text(box.locator(".widget-html-content"))  # noqa: E731
    action = box.locator("select").nth(1)
    found = []
    before = view()
    shown = {}
    for index in (1, 2):
        name = action.locator("option").nth(index).inner_text().split(":")[0].strip()
        action.select_option(index=index)
        shown[name] = lab.wait_change(view, before, timeout=30)
        if f"forced: {name}" not in shown[name]:
            found.append(f"forcing action {name} did not show a continuation under it: {shown[name][:200]!r}")
        before = shown[name]
    first, second = shown.values()
    if first == second:
        found.append("forcing two different actions showed the same view")
    lab.screenshot("02_end_to_end_planner", box)
    return found


# -------------------------------------------------------------------------------------------- 03_sequencematch


def sequencematch(lab: LabPage, runs: Path) -> list[str]:
    """TraceExplorer: type a prompt, pick a model, Generate; then force a wrong first token and Generate again."""
    box = lab.widget_with_button("Generate")
    result = box.locator(".widget-html-content")
    view = lambda: html_text(result)  # noqa: E731
    found = []
    prompt, force = box.locator("input[type=text]").nth(0), box.locator("input[type=text]").nth(1)
    before = view()
    prompt.fill("50318")
    force.fill("")
    box.locator("select").select_option("mle")
    greedy = lab.press_and_wait(box, "Generate", view, before)
    if greedy == before or "type up to" in greedy or not greedy:
        found.append(f"Generate for prompt 50318 with model mle did not show traces: {greedy[:200]!r}")
    force.fill("9")
    box.locator("select").select_option("sm")
    forced = lab.press_and_wait(box, "Generate", view, greedy)
    if forced == greedy or "force:" in forced or not forced:
        found.append(f"forcing a wrong first token (9) with model sm did not change the traces: {forced[:200]!r}")
    lab.screenshot("03_sequencematch", box)
    return found


# -------------------------------------------------------------------------------------- 04_self_generated_tokens


def self_generated_tokens(lab: LabPage, runs: Path) -> list[str]:
    """CheckpointSlider: move the slider to the first checkpoint; the readout and the figure below must change."""
    box = lab.page.locator(".jp-OutputArea-output .widget-vbox").filter(
        has=lab.page.locator(".noUi-target")).last
    box.wait_for(timeout=30000)
    readout = box.locator(".widget-readout")
    image = box.locator(".widget-output img")
    view = lambda: readout.inner_text() + " " + (image.first.get_attribute("src") or "")[-200:]  # noqa: E731
    before = view()
    handle = box.locator(".noUi-handle").first
    handle.focus()
    for key in ("Home", "ArrowLeft", "ArrowLeft", "ArrowLeft"):
        handle.press(key)
        lab.page.wait_for_timeout(300)
        if view() != before:
            break
    else:  # no keyboard support: drag the handle to the start of the track
        track, grip = box.locator(".noUi-target").first.bounding_box(), handle.bounding_box()
        lab.page.mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
        lab.page.mouse.down()
        lab.page.mouse.move(track["x"] + 1, grip["y"] + grip["height"] / 2, steps=10)
        lab.page.mouse.up()
    after = lab.wait_change(view, before, timeout=30)
    found = []
    if after == before:
        found.append(f"moving the checkpoint slider did not change its readout or figure ({before[:60]!r})")
    elif not image.count() or image.first.evaluate("i => i.naturalWidth") == 0:
        found.append("after moving the checkpoint slider the figure did not render")
    lab.screenshot("04_self_generated_tokens", box)
    return found


# --------------------------------------------------------------------------------------------- 05_gemma_encoder


def gemma_encoder(lab: LabPage, runs: Path) -> list[str]:
    """PairExplorer: type two texts and Compare; then change one text and Compare again."""
    box = lab.widget_with_button("Compare")
    result = box.locator(".widget-html-content")
    view = lambda: html_text(result)  # noqa: E731
    a, b = box.locator("textarea").nth(0), box.locator("textarea").nth(1)
    found = []
    before = view()
    a.fill("The central bank raised interest rates as inflation rose")
    b.fill("Shares fell sharply after the company reported a loss")
    first = lab.press_and_wait(box, "Compare", view, before)
    if first == before or "similarity" not in first:
        found.append(f"Compare did not show topics and a similarity: {first[:200]!r}")
    b.fill("The striker scored twice and the club won the cup final")
    second = lab.press_and_wait(box, "Compare", view, first)
    if second == first or "similarity" not in second:
        found.append(f"changing text B did not change the comparison: {second[:200]!r}")
    lab.screenshot("05_gemma_encoder", box)
    return found


# ----------------------------------------------------------------------------------------------------- generic


def poke_widgets(lab: LabPage, runs: Path, timeout: float = 30) -> list[str]:
    """For a notebook without its own interaction: in each widget box with a control, change the control (slider to
    the start, dropdown to another option) and press its button; the box must show something else afterwards."""
    found = []
    boxes = lab.page.locator(".jp-OutputArea-output > .widget-vbox")
    for i in range(boxes.count()):
        box = boxes.nth(i)
        controls = box.locator(".noUi-handle, select, button")
        if not controls.count() or box.locator(".widget-hprogress, .progress").count():
            continue

        def view(box=box) -> str:
            images = box.locator("img").all()
            return box.inner_text() + "".join((img.get_attribute("src") or "")[-100:] for img in images)

        before = view()
        if box.locator(".noUi-handle").count():
            box.locator(".noUi-handle").first.focus()
            box.locator(".noUi-handle").first.press("Home")
        if box.locator("select").count():
            options = box.locator("select option").all_inner_texts()
            current = box.locator("select").first.input_value()
            other = next((o for o in options if o != current), None)
            if other is not None:
                box.locator("select").first.select_option(other)
        if box.locator("button").count():
            box.locator("button").first.click()
        if lab.wait_change(view, before, timeout=timeout) == before:
            found.append(f"widget box {i}: changing its controls did not change what it shows")
    return found


INTERACTIONS = {
    "00_quickstart": quickstart,
    "01_warmup_generations": warmup_generations,
    "02_end_to_end_planner": end_to_end_planner,
    "03_sequencematch": sequencematch,
    "04_self_generated_tokens": self_generated_tokens,
    "05_gemma_encoder": gemma_encoder,
}
