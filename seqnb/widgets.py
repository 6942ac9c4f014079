"""Interactive explorers: thin ipywidgets views over tested functions. They construct and respond headless too,
so a notebook can drive their controls in a cell and CI exercises them."""

from __future__ import annotations

import html
from typing import Callable

import ipywidgets as widgets


class PromptExplorer(widgets.VBox):
    """A text box and a button; pressing it shows `respond(text)` (an HTML fragment) below.

    `ask(text)` types and presses in one call and returns the HTML shown.
    """

    def __init__(self, respond: Callable[[str], str], *, description: str, placeholder: str, value: str = ""):
        self.respond = respond
        self.text = widgets.Text(value=value, placeholder=placeholder, description=description,
                                 layout=widgets.Layout(width="420px"))
        self.button = widgets.Button(description="Answer", button_style="primary")
        self.result = widgets.HTML()
        self.button.on_click(lambda _: self._update())
        self.text.on_submit(lambda _: self._update())
        super().__init__([widgets.HBox([self.text, self.button]), self.result])

    def _update(self) -> None:
        try:
            self.result.value = self.respond(self.text.value)
        except ValueError as e:  # bad input is shown, not raised into the front-end
            self.result.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def ask(self, text: str) -> str:
        self.text.value = text
        self.button.click()
        return self.result.value
