"""`python -m stdec.lm_eval ...`: lm-eval's command line with the "stdec" model registered."""

from stdec.lm_eval import main

main()
