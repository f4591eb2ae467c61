"""Arithmetic without `eval`: an expression is parsed into a syntax tree and evaluated node by
node (numbers, + - * / // % **, math functions, pi/e/tau). Anything else (names, attributes,
calls of other functions, huge powers) is refused with an LmstackError.

Used by the agents' calculator tool and by synthetic-data verification.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

from lmstack.errors import LmstackError

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {name: getattr(math, name) for name in ("sqrt", "log", "log10", "log2", "exp", "sin", "cos", "tan",
                                                     "asin", "acos", "atan", "floor", "ceil", "factorial")}
_FUNCTIONS |= {"abs": abs, "round": round, "min": min, "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def calculate(expression: str) -> float | int:
    """The value of an arithmetic expression; anything else (names, attributes, calls of other
    functions, huge powers) is refused."""
    if len(expression) > 500:
        raise LmstackError("the expression is too long (500 characters at most)")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise LmstackError(f"not an arithmetic expression: {expression!r}") from None
    try:
        return _evaluate(tree.body)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as error:
        raise LmstackError(f"cannot compute {expression!r}: {error}") from None


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 1000:
            raise LmstackError("exponent too large (at most 1000)")
        return _BINARY[type(node.op)](left, right)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords and len(node.args) <= 8):
        arguments = [_evaluate(arg) for arg in node.args]
        if node.func.id == "factorial" and arguments and arguments[0] > 1000:
            raise LmstackError("factorial argument too large (at most 1000)")
        return _FUNCTIONS[node.func.id](*arguments)
    raise LmstackError(f"the calculator does not allow {ast.unparse(node)!r}; use numbers, + - * / ** % and "
                       f"{', '.join(sorted(_FUNCTIONS))}")
