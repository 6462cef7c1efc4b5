"""What a run shows people: the model card, the report page, plots, comparison and explanation pages."""
