"""The bundled testbed models' making: their synthetic suites (`suites`: gsm, code, lists,
arith, vision), the masked-diffusion training recipes (`train`, `train_vision`) and the
tokenizer recipe (`tokenizer`). `stdec train` runs the recipes; `stdec.tasks.get_task` serves
the suites by name beside the real benchmarks."""
