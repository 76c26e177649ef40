"""Examples bundled with mvtools (package data ``mvtools.examples``): ``mvtools examples`` lists and copies them."""
