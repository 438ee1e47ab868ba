"""Training: the recipe training loop (checkpoints, resume, validation, DDP), train.finetune, classifier and
LM loops, the teacher/student setup of distillation."""
