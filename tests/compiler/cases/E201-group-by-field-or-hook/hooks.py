def account_of(withdrawal: object) -> str:
    return ""
