"""Using a trained run: load it, predict, embed, search, explain."""
