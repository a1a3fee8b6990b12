from sonalign.cli import main

main()
