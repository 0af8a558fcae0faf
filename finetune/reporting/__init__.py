"""The HTML report's building blocks (html.py) and matplotlib figures written as PNG (plots.py)."""
