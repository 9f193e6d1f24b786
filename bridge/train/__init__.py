"""Training: paired datasets from videos (dataset.py), synthetic audio-reactive videos to train on
(synth.py), one trainer per model family (pix2pix.py), and the `dataset` / `train` sub-commands
(commands.py). Each module imports its heavy dependencies itself, so importing this package is cheap.
"""
