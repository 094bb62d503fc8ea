"""c2lite operator packs: one module per op family, each holding its schema, kernels and
gradient maker. Importing this package registers them all."""
from c2lite.ops import fill, utility, fc, activation, loss, sgd, legacy_schemas, rank_loss  # noqa: F401
