"""The library the pipeline's stages (stages/*.py) call, in layers; imports point down only (python
../shared/tools/layer_check.py checks that, and that no module-level import cycle exists):

    errors, paths, io          the base: one exception for users' mistakes, where every stage reads and writes, atomic files
    config/                    the one typed schema of params.yaml, composed per task from its sections
    data/                      reading users' tables and builtin data, labels and heads, images as data
    models/                    the model families several tasks share (text encoders, image models) behind one interface
    training/ scoring/         fine-tuning (the Trainer, strategies, DDP); metrics with intervals
    compression/ attribution/  int8, pruning, distillation, ONNX; the deletion test of attributions
    reporting/                 the self-contained HTML report's helpers and plots
    families/                  the stage verbs, one module per stage, for each family of tasks (classification, generative)
    tasks/                     one folder per task (only the registry imports them, by name)
    stage, search              what stages share (the CLI, outputs written all or nothing); the hyper-parameter search

Every module is listed as a dvc.yaml dependency of each stage that runs it (tests/test_dvc_yaml.py checks), so editing
one reruns exactly the stages that use it.
"""
