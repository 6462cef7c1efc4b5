"""Export a finished run for use elsewhere: ``hf.py`` writes what a model hub needs."""
