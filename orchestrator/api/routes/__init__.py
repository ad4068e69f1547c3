"""One router per resource; handlers validate, call one function, shape the answer."""
