package dsn

// ParseUnguarded is Parse without its recover, so that the fuzz test sees a
// panic instead of an error.
func ParseUnguarded(raw []byte) (*Message, error) { return parse(raw, 0) }
