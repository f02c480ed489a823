ALPHABET = "abc"
