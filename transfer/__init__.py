"""Transfer: climb the ladder, extrapolate the plan."""
