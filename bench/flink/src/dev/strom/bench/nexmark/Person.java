package dev.strom.bench.nexmark;

import java.util.Objects;

/** A Nexmark person (a Flink POJO: public fields, public no-arg constructor). */
public class Person {
    public long id;
    public String name;
    public String emailAddress;
    public String creditCard;
    public String city;
    public String state;
    /** Event time, epoch ms. */
    public long dateTime;
    public String extra;

    public Person() {}

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof Person)) {
            return false;
        }
        Person p = (Person) o;
        return id == p.id && dateTime == p.dateTime && Objects.equals(name, p.name)
                && Objects.equals(emailAddress, p.emailAddress) && Objects.equals(creditCard, p.creditCard)
                && Objects.equals(city, p.city) && Objects.equals(state, p.state) && Objects.equals(extra, p.extra);
    }

    @Override
    public int hashCode() {
        return Objects.hash(id, name, emailAddress, creditCard, city, state, dateTime, extra);
    }

    @Override
    public String toString() {
        return "Person{id=" + id + ", name=" + name + ", emailAddress=" + emailAddress + ", creditCard=" + creditCard
                + ", city=" + city + ", state=" + state + ", dateTime=" + dateTime + ", extra=" + extra + "}";
    }
}
