from pbrl.cli import main

main()
