"""Helpers the lab uses to analyse plate-reader data."""


def normalise_plate(values, blank):
    """Subtract the mean of the blank wells from every well of a 96-well plate reading."""
    offset = sum(blank) / len(blank)
    return [value - offset for value in values]


def dose_response_ic50(concentrations, responses):
    """Estimate the IC50: the concentration where the response crosses half of its maximum."""
    half = max(responses) / 2
    for low, high, r_low, r_high in zip(concentrations, concentrations[1:], responses, responses[1:]):
        if (r_low - half) * (r_high - half) <= 0:
            return low + (half - r_low) * (high - low) / (r_high - r_low)
    return None
