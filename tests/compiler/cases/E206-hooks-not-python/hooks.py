def show(order):
    print(order
