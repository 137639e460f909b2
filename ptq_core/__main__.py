from ptq_core.cli import console

console()
