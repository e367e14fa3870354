"""Model card templates, shipped inside the wheel as ``alignez_hf.model_cards`` (see pyproject's package-dir)."""
