"""Encoders and the models built on them: classifiers, bi-encoders, the d2l BERT, pooling, the lean forward."""
