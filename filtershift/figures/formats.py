"""The file formats figures are written in: one list for the command line, job specs and the writer."""

FORMATS = ("html", "png")  # png needs chromium and chromium-driver (headless)
