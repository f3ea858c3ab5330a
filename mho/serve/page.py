"""The web page at `/`: pick a model, upload or record a clip, see the transcript."""


def page_html() -> str:
    return "<!doctype html><title>mho serve</title><h1>mho serve</h1>"
