"""Model families several tasks share, behind one interface (base.py Models): text encoders (texts.py), image models
(images.py), and how their layers are found (anatomy.py)."""
