package isotime

import (
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"2022-04-11T13:49:37Z", "2022-04-11T13:49:37.123Z", "2022-04-11T13:49:37+01:00",
		"2022-04-11T13:49:37-0530", "2022-04-11T13:49:37", "2022-04-11T13:49:37.1234567",
		"2022-04-11 13:49:37", "2022-04-11 13:49:37Z", " 2022-04-11T13:49:37Z ",
		"2022-04-11", "2022-04-11T25:00:00Z", "9999-12-31T23:59:59-01:00", "", "now",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			if !got.IsZero() {
				t.Fatalf("got %s with the error %v", got, err)
			}
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("Parse(%q) = %s, not in UTC", s, got)
		}
		if y := got.Year(); y < 0 || y > 9999 {
			return // RFC 3339 cannot write it back
		}
		again, err := Parse(got.Format(time.RFC3339Nano))
		if err != nil || !again.Equal(got) {
			t.Fatalf("Parse(%q) = %s, which reads back as %s, %v", s, got, again, err)
		}
	})
}

func TestParse(t *testing.T) {
	want := time.Date(2022, time.April, 11, 13, 49, 37, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		{in: "2022-04-11T13:49:37Z", want: want},
		{in: "2022-04-11T14:49:37+01:00", want: want},
		{in: "2022-04-11T08:19:37-0530", want: want},
		{in: "2022-04-11T13:49:37", want: want},
		{in: "2022-04-11 13:49:37", want: want},
		{in: "2022-04-11 14:49:37+01:00", want: want},
		{in: " 2022-04-11T13:49:37Z\n", want: want},
		{in: "2022-04-11T13:49:37.25Z", want: want.Add(250 * time.Millisecond)},
		{in: "2022-04-11T13:49:37.1234567", want: want.Add(123456700)},
		{in: "", wantErr: true},
		{in: "2022-04-11", wantErr: true},
		{in: "11/04/2022 13:49", wantErr: true},
		{in: "2022-04-11T25:49:37Z", wantErr: true},
		{in: "2022-04-11T13:49:37 UTC", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %s, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("got %s, want %s in UTC", got, tt.want)
			}
		})
	}
}
