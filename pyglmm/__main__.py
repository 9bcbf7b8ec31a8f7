from pyglmm.cli import main
import sys
sys.exit(main())
