"""Training logs: metric writers (TensorBoard without TF, JSONL), a progress line, image panels."""
