package pastry

import "time"

type time_Duration = time.Duration

const ms = time.Millisecond
