"""Text the demos share (not a demo: tests/test_notebooks.py runs only demos/*.py)."""
