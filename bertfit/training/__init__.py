"""Fine-tuning: train() and the one loop every objective runs through."""
