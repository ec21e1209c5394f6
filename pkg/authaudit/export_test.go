package authaudit

// Exported for the black-box tests only.

// TagListRoundTrip parses a DMARC tag list and renders it again.
func TagListRoundTrip(raw string) string { return newTagList(raw).String() }
