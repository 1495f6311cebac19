"""The laboratory: scenarios that reproduce a claim of the notes and print what they measured."""
