def longest(current, order):
    return order.id if len(order.id) > len(current) else current
