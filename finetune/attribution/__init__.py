"""What every explainer shares: the deletion test of an attribution's faithfulness (deletion.py)."""
