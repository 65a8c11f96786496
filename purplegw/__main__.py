from purplegw.cli import main

main()
