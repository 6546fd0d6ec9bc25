from ptlens.cli import main

main()
