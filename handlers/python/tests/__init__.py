# Tests for the Python handlers. Run from the repo root:
#   python3 -m unittest discover -s handlers/python/tests -t handlers/python
