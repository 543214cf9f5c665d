"""What each config field means: the text of the generated config reference (docs/reference/config.md).

Kept apart from :mod:`metacompare.config.runconfig` so that the dataclasses stay short. A field added
later may instead carry ``metadata={"doc": "..."}`` or a comment on its line (or right above it) in
runconfig.py; :func:`doctools.reference.field_doc` reads all three, and the docs build and
``tests/test_docs.py`` fail while any field has no meaning at all. Keys are dotted paths from
:class:`~metacompare.config.runconfig.RunConfig` (``omniglot.split``).
"""

from __future__ import annotations

FIELD_DOCS: dict[str, str] = {
    "experiment": "Results go to `<results_dir>/<experiment>/`; not part of the run id.",
    "algorithm": "One of `reptile`, `fomaml`, `maml`, `anil`, `metasgd`, `naive_reptile`, `naive_reptile_fixed` "
                 "and the baselines `pretrain`, `scratch`, or a list of them in a config file (one run each, "
                 "all scored on the same test episodes). `metacompare list` names them all.",
    "backend": "The MAML-family inner loop: `metacompare` (torch.func), `learn2learn` (its `MAML` wrapper) or "
               "`higher`; tests prove all three give the same meta-gradients.",
    "dataset": "`sine`, `digits` (scikit-learn's, offline), `mnist`, `omniglot` or `miniimagenet`.",
    "data_root": "Folder the dataset's files are read from (and downloaded into); not part of the run id.",
    "model": "The network: `mlp` (40-40, sine), `metamodel` (the Reptile tutorial article's sample "
             "784-64-64-N MLP), `conv4`, "
             "`conv4_strided`, `conv4_finn` (cbfinn/maml's: BatchNorm offset without scale, Xavier convs, "
             "N(0, 1) head) or `conv4_nichol` (supervised-reptile's: Glorot init, BatchNorm eps 1e-3).",
    "ways": "N of an N-way task: classes per task (1 for sine regression).",
    "shots": "K of a K-shot task: support examples per class that a test task adapts on.",
    "query": "Query examples per class that score a training task.",
    "num_tasks": "Distinct training tasks (learn2learn's `num_tasks`); `-1`: a new task at every draw.",
    "inner_lr": "Step size of the task adaptation (the inner loop, `metacompare/algorithms/inner.py`).",
    "inner_steps": "Adaptation steps per training task.",
    "inner_optimizer": "The inner loop's optimiser: `sgd` or `adam`.",
    "train_shots": "Examples per class a training task adapts on; Reptile trains on all of them "
                   "(supervised-reptile's `--train-shots`). 0: `shots`.",
    "test_query": "Query examples per class of validation and test episodes; one value for every algorithm "
                  "of a comparison. 0: `query`.",
    "inner_batch_size": "Inner mini-batches of this size, drawn without replacement one pass after another "
                        "(supervised-reptile's `--inner-batch`). 0: full batch.",
    "eval_inner_batch_size": "The same at test time (supervised-reptile's `--eval-batch`). 0: full batch.",
    "inner_betas": "The inner Adam's betas (supervised-reptile: `[0, 0.999]`).",
    "inner_state": "`reset` the inner optimiser's state for each task, or `carry` it across tasks "
                   "(supervised-reptile); evaluation starts from the carried state and restores it.",
    "inner_loss": "`mean`, `sum` (what TensorFlow differentiates for a vector loss: supervised-reptile) or "
                  "`sum_over_shots` (Finn et al.'s per-example sum / K, so the papers' inner rates are used "
                  "verbatim).",
    "outer_lr": "Step size of the meta-update (Reptile's meta-step ε).",
    "outer_optimizer": "The meta-update's optimiser: `adam` or `sgd`.",
    "outer_lr_final": "Anneal the outer step linearly from `outer_lr` to this over the iterations or the "
                      "budget (supervised-reptile's `--meta-step-final 0`); null: constant.",
    "meta_batch_size": "Tasks per meta-update.",
    "iterations": "Meta-iterations; a `budget` may stop training sooner.",
    "eval_interval": "Validate every this many iterations (unless `budget.evaluations` is set).",
    "eval_episodes": "Validation episodes per validation.",
    "test_episodes": "Test episodes, the same for every algorithm of a comparison (drawn from `eval_seed`).",
    "floor_episodes": "The untrained network (the floor) and the training-task score (the generalisation gap) "
                      "on the first this many test episodes and as many training-class episodes; 0: all "
                      "`test_episodes`.",
    "eval_inner_steps": "Adaptation steps of the algorithm's own test procedure.",
    "seed": "Training seed (task draws, initial weights, mini-batch order).",
    "eval_seed": "Seed of the validation and test episodes, a stream apart from training's: no `seed` value "
                 "can make training and test tasks coincide.",
    "test_checkpoint": "Test the `last` iterate or the `best` validation checkpoint (MAML++; Chen et al. 2019).",
    "common_evaluation": "A test procedure every algorithm is also scored with, beside its own (fields below); "
                         "null: none.",
    "test_inner_steps": "Extra test scores after these numbers of adaptation steps, e.g. `[1, 5, 10]` "
                        "(Finn et al. 2017, Figure 3).",
    "device": "`cpu`, `cuda` or `cuda:N`; not part of the run id.",
    "precision": "`float32`, `float64`, or `bfloat16` (meta-training under autocast with float32 master "
                 "weights; evaluation stays float32).",
    "checkpoint_interval": "Write a resumable checkpoint every this many iterations (and on Ctrl-C / SIGTERM).",
    "budget_rungs": "The budget ladder: with n > 1, the run also saves its weights when its training crosses "
                    "each of the budgets B/2^(n-1), ..., B/4, B/2 (B its budget, or its iterations without one) and "
                    "scores those snapshots on its test episodes (`rungs.csv`); `compare` sets 5 unless given "
                    "`--rungs`. 0: off. Not part of the run id.",
    "results_dir": "Root folder of the results; not part of the run id.",
    "omniglot": "Where Omniglot comes from and how it is split (fields below).",
    "evaluation": "`transductive` (the query set is scored as one batch, so BatchNorm uses its statistics, as "
                  "the papers' code does) or `non_transductive` (each query example is scored alone with the "
                  "support set).",
    "filters": "conv4 channels: 64 for Omniglot, 32 for mini-ImageNet (Finn et al. 2017).",
    "miniimagenet": "mini-ImageNet options (field below).",
    "digits": "The digit split of `digits` and `mnist` (fields below).",
    "batch_tasks": "Run the whole meta-batch as one grouped-convolution network (`metacompare/models/grouped.py`); "
                   "fast on a GPU, slower on a CPU.",
    "task_chunk": "With `batch_tasks`, this many tasks at a time, to bound memory. 0: all.",
    "vmap": "Run the meta-batch with `torch.func.vmap`: one task's meta-gradient mapped over the tasks "
            "(`metacompare/engines/vmap.py`), the natural batched engine on a GPU; not with `batch_tasks`. "
            "Reptile (without a carried inner state), FOMAML, MAML, ANIL and Meta-SGD.",
    "memory_format": "`contiguous` or `channels_last` (NHWC convolutions).",
    "compile": "`torch.compile` the engine's whole meta-gradient step (`metacompare/engines/compiled.py`): one "
               "task's, the grouped network's or the vmapped one's; Reptile, FOMAML and MAML only.",
    "tracker": "`tensorboard` (default), `mlflow` (TensorBoard and MLflow) or `none`; not part of the run id.",
    "tracking_uri": "The MLflow server or store; empty: `<results_dir>/mlruns`. Not part of the run id.",
    "budget": "Bounds on training besides `iterations` (fields below; `metacompare/training/budget.py`).",
    # OmniglotConfig
    "omniglot.sources": "The Omniglot zips (or unpacked folders) in `data_root` to read.",
    "omniglot.rotations": "Add rotated characters (90/180/270 degrees) to the splits in `rotated_splits`.",
    "omniglot.image_size": "Images are resized to this many pixels square.",
    "omniglot.train_alphabets": "`split: alphabets`: the training alphabets (`Greek`, `source/Greek` or "
                                "`source/*`); null: every alphabet not in validation or test.",
    "omniglot.validation_alphabets": "`split: alphabets`: the validation alphabets.",
    "omniglot.test_alphabets": "`split: alphabets`: the test alphabets.",
    "omniglot.download": "Download the official zips into `data_root` when they are missing (MD5-checked).",
    "omniglot.split": "`alphabets` (the lists above, alphabet-disjoint) or `characters`: every character "
                      "shuffled with `split_seed` and cut by count, as both papers do.",
    "omniglot.split_seed": "`split: characters`: the shuffle's seed (Nichol et al.: 0; Finn et al.: 1).",
    "omniglot.train_characters": "`split: characters`: how many characters train (Nichol et al.: 1200; "
                                 "Finn et al.: 1100).",
    "omniglot.validation_characters": "`split: characters`: how many of the next characters validate "
                                      "(Finn et al.: 100); the rest test.",
    "omniglot.rotation": "`classes` (each turn of a character is a class of its own) or `per_task` (each task "
                         "turns each class by a random multiple of 90 degrees, Finn et al.).",
    "omniglot.rotated_splits": "Which splits get rotations (Nichol et al.: `[train]`).",
    # MiniImagenetConfig
    "miniimagenet.download": "Fetch learn2learn's three pickles into `data_root` when missing (about 3 GB; "
                             "Zenodo, then Dropbox).",
    # DigitsConfig
    "digits.train_classes": "Digits that meta-train.",
    "digits.validation_classes": "Digits that validate; `[]`: validation episodes from the training digits, "
                                 "on `eval_seed`'s stream.",
    "digits.test_classes": "Digits that meta-test (unseen in training).",
    "digits.download": "Let `mnist` download its files into `data_root` (torchvision's mirrors and MD5s).",
    # EvalProcedure (common_evaluation)
    "common_evaluation.optimizer": "The shared procedure's optimiser: `sgd` or `adam`.",
    "common_evaluation.lr": "Its step size.",
    "common_evaluation.steps": "Its adaptation steps.",
    "common_evaluation.batch_size": "Its mini-batch size; 0: full batch.",
    "common_evaluation.betas": "Its Adam betas.",
    # BudgetConfig
    "budget.seconds": "Stop at this many training seconds on the wall clock (validation excluded and timed "
                      "apart); null: no bound.",
    "budget.cpu_seconds": "Stop at this many training seconds of CPU time (all processes of a data-parallel "
                          "run): not charged for waiting for a core, but a busy neighbour still slows each CPU-second, "
                          "so equal work only on an otherwise idle machine. null: no bound.",
    "budget.work": "Stop at this much work in example-passes (forward 1, backward 2, second order counted); "
                   "null: no bound.",
    "budget.evaluations": "Validate at this many equally spaced fractions of the budget instead of every "
                          "`eval_interval` iterations. 0: by `eval_interval`.",
}

# The sections for your own data (user_data), MAML++'s options (mamlpp) and ResNet-12's shape (resnet12).
FIELD_DOCS.update({
    "user_data": "Your own data for `dataset: folder`, `table` or `text` (fields below; "
                 "[Your own data](../guide/own-data.md)).",
    "user_data.root": "The image folder (one sub-folder per class, or group/class) or the CSV/Parquet file.",
    "user_data.label_column": "A table's or text file's column holding the class.",
    "user_data.text_column": "A text table's column holding the text.",
    "user_data.validation_fraction": "Fraction of the classes (or whole groups) that validate; 0: validate on "
                                     "fresh episodes of the training classes.",
    "user_data.test_fraction": "Fraction of the classes (or whole groups) that test.",
    "user_data.split_seed": "Seed of the shuffle that splits the classes.",
    "user_data.image_size": "Images are resized to this many pixels square; 0: detected (28 grey, 84 colour).",
    "user_data.channels": "Image channels; 0: detected (grey unless a sampled file is colour).",
    "user_data.invert": "Take 1 - pixel (ink = 1, as the Omniglot loader does).",
    "user_data.cache_mb": "Bound of the decoded-image cache, in MB.",
    "user_data.standardize": "Standardise a table's feature columns.",
    "user_data.vocab_buckets": "Text: tokens are hashed into this many ids.",
    "user_data.max_tokens": "Text: tokens kept per text.",
    "user_data.embedding_dim": "Text: width of the token embedding.",
    "mamlpp": "MAML++'s training options (Antoniou et al. 2019, section 4; fields below); null: the "
              "algorithm's own choice (all off for maml and fomaml, the paper's values for `maml++`).",
    "mamlpp.multi_step_loss": "MSL: the meta-loss is the query loss after every inner step, with importance "
                              "weights annealed towards the last step.",
    "mamlpp.msl_fraction": "MSL anneals over this fraction of training, then the last step's loss alone "
                           "(paper: 10 of 100 epochs).",
    "mamlpp.per_step_bn_weights": "BNWB: every BatchNorm gets a weight and bias per inner step.",
    "mamlpp.per_step_bn_statistics": "BNRS: every BatchNorm keeps running statistics per inner step.",
    "mamlpp.learned_inner_lr": "LSLR: one SGD step size per parameter tensor and per inner step, learned by the "
                               "outer optimiser.",
    "mamlpp.first_order_fraction": "DA: first order for this fraction of training, then second order (paper: "
                                   "50 of 100 epochs; 0: never first order).",
    "resnet12": "`model: resnet12`'s shape (Lee et al. 2019's MetaOptNet ResNet-12; fields below).",
    "resnet12.widths": "The four residual blocks' widths: MetaOptNet's 64-160-320-640 or 64-128-256-512.",
    "resnet12.dropblock_rate": "DropBlock's drop rate after the last two blocks, in [0, 1) (MetaOptNet: 0.1; 0: off).",
    "resnet12.dropblock_size": "DropBlock's square block size (MetaOptNet: 5).",
})
